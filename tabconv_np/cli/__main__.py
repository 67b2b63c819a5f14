"""``python -m tabconv_np.cli``: the ``tabconv`` command."""
import sys

from . import main

sys.exit(main())
