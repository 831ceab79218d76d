from regate.cli import main

raise SystemExit(main())
