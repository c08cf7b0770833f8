"""``python -m keras_rf``: the ``keras-rf`` command line."""

import sys

from keras_rf.cli import main

sys.exit(main())
