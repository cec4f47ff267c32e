import sys

from benchmark_label_image.run import main

sys.exit(main())
