"""One module per stage of the pipeline (harness/pipeline.py): plant, collect, diff, score, report.

Each exposes `run(ws, ...)`, working in a `Workspace` (harness/workspace.py) and returning what the next
stage consumes; what a stage writes to disk is what a later invocation reads back.
"""
