"""What a run IS: definitions, context, replay state, (de)serialisation. No I/O here."""
