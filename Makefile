# The two commands of the README. Both set up ./.venv first (scripts/setup).
.PHONY: demo test test-fast setup viewer

demo:
	scripts/setup
	.venv/bin/tessera-ray demo

# Lint and type-check first (pyproject.toml's [tool.ruff] and [tool.mypy]; about 40 s on a cold cache).
test:
	scripts/setup dev
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q

test-fast:
	scripts/setup dev
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q -m "not slow"

# Rebuild the browser viewer (viewer/ -> tessera_ray/viewer_assets/, committed); needs Node.js.
viewer:
	cd viewer && npm ci --no-audit --no-fund && npm run build
