from fedmist.cli import main

main()
