# The docs site: Sphinx over docs/ (Markdown through myst-parser; the config reference
# from the pydantic schema, the CLI reference from click, the API from the docstrings),
# strict: every warning, an unresolved reference included, fails the build; -E reads every page
# afresh, so every warning shows each time. `make test` runs it.
.PHONY: docs

docs: $(STAMP)
	$(BIN)/python -m sphinx -b html -E -W --keep-going -n -q -d build/docs/.doctrees docs build/docs
