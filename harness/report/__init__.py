"""Reports: machine facts, markdown and JSON output of runs. Pure, apart from reading versions."""
