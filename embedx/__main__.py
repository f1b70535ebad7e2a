from embedx.cli import main

main()
