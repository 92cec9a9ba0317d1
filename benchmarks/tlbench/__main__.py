from tlpipe.errors import run_stage

from .cli import main

run_stage(main)
