"""cinebridge: the station's admin command line; talks to the gateway's HTTP API with a token."""
