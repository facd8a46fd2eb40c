"""One module per benchmark scenario; each has ``run(...) -> ScenarioResult``."""
