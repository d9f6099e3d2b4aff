import sys

from nni_bio.cli import main

sys.exit(main())
