# The two commands of the README. Both set up ./.venv first (scripts/setup).
.PHONY: demo test test-fast setup

demo:
	scripts/setup
	.venv/bin/tessera-ray demo

test:
	scripts/setup dev
	.venv/bin/python -m pytest -q

test-fast:
	scripts/setup dev
	.venv/bin/python -m pytest -q -m "not slow"
