"""distill-run: distil a synthetic set (torchrun-aware).
The command only; the work is `distill.stages.distill.run_distill`."""

from distill.cli import command
from distill.stages.distill import run_distill

main = command(run_distill, "distill-run")


if __name__ == "__main__":
    main()
