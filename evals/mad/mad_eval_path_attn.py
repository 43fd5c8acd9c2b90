"""MAD suite for `path_attn` (layer settings: configs/mad/architectures.yaml). See evals/mad/run.py for flags."""
import sys

from evals.mad.run import main

if __name__ == "__main__":
    sys.exit(main(default_arch="path_attn"))
