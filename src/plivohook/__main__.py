from plivohook.console import main

main()
