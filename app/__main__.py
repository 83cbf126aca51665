import sys

from hf_pept.app import main

sys.exit(main())
