"""Customer scenarios run against the lab: a real MariaDB in a pod (``mysql``), job pods racing
the controller (``job``), and the window/lag scenarios (``windows``). Each timed scenario
declares itself once in ``timed/<name>.py`` (``declaration.Scenario``: name, what it shows,
summarizer, report section); the pytest modules in ``cases/scenarios/`` drive them and feed
``harness.report``."""
