"""The Redis layer: the key map (`keys`), connections and the loop that survives Redis going
away (`connection`), the Lua scripts behind one typed function each (`lua`), and the
auto-pipelining that carries their calls (`autopipeline`)."""
