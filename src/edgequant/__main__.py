"""`python -m edgequant` (and `torchrun -m edgequant qat ...`)."""

from edgequant.cli import main

main()
