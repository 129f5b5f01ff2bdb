from beep_av.cli import main

raise SystemExit(main())
