# Distributions: `make dist` builds the sdist, then the wheel from that sdist (so the sdist
# is known to build a correct wheel), into dist/, and checks both with twine.
# tests/test_package.py installs such a wheel into a fresh venv and runs it.
.PHONY: dist

dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*
