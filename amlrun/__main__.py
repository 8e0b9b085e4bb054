from amlrun.cli import main

raise SystemExit(main())
