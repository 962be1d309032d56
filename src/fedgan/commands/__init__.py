"""One module per `fedgan` command: its parser (`add_parser`) and what it does (`run`)."""
