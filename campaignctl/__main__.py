import sys

from campaignctl.cli import main

sys.exit(main())
