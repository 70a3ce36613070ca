"""`python -m nbagent_train` (and `accelerate launch -m nbagent_train fit ...`)."""

from nbagent_train.cli.app import main

main()
