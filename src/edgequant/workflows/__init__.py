"""Workflows: what a CLI command does, as one library function each (typed config in, typed
result out). The CLI parses options, shows progress, prints the result and maps errors to exit
codes; a Python user calls the same function and gets the same model and numbers."""
