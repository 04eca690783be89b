"""Everything that runs on Ray: the map tasks, the encoder actors, the reduce and publish steps."""
