from plivohook.cli import main

main()
