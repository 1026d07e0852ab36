"""Train and evaluate a model: python run_recbole_diffrec.py --model=DiffRec --dataset=ml-100k"""

import sys

from recbole_diffrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
