"""`python -m proxy` is `mixpanel-proxy`."""

import sys

from .cli import main

sys.exit(main())
