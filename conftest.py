"""Root conftest: the project's own tests drive pytest in-process and in subprocesses."""

pytest_plugins = ["pytester"]
