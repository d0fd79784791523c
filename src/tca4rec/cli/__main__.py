import sys

from tca4rec.cli import main

sys.exit(main())
