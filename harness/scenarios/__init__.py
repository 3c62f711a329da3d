"""Customer scenarios run against the lab: a real MariaDB in a pod (``mysql``), job pods racing
the controller (``job``), and the window/lag scenarios (``windows``). The pytest modules in
``cases/scenarios/`` drive them and feed ``harness.report``."""
