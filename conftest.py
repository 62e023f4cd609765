"""Root conftest: plugins every test directory (tests/, e2e/) shares."""

pytest_plugins = ["tests.kube.plugin"]
