"""The engine both the CLI and the Python API drive: prepare (`prepare.py`), the run's options
(`options.py`) and settings (`settings.py`), the stages of a run (`stages.py`, `run.py`) and the
estimate (`estimating.py`)."""
