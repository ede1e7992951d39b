"""distill-buffers: train expert trajectories into a buffer folder.
The command only; the work is `distill.stages.buffers.run_buffers`."""

from distill.cli import command
from distill.stages.buffers import run_buffers

main = command(run_buffers, "distill-buffers")


if __name__ == "__main__":
    main()
