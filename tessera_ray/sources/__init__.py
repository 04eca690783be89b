"""Where the inputs come from: STAC search (API or stac-geoparquet), COG reads, and the S2/S1 rules.

* :mod:`.scenes`: source profiles and scene records (what a search returns);
* :mod:`.stac`: STAC API search (the only module doing STAC HTTP);
* :mod:`.catalog`: search in a stac-geoparquet snapshot, no API calls;
* :mod:`.cog`: GDAL settings, windowed and warped COG reads (the only module doing COG I/O);
* :mod:`.sentinel2`, :mod:`.sentinel1`: the science as pure functions;
* :mod:`.read`: one block's :class:`~tessera_ray.cube.TimeSeriesCube` from its scenes.
"""
