"""The district-day simulator behind ``gridflow simulate``.

- ``world``: the district (departments, categories, cells) as intake's API describes it;
- ``texts``: what people say (report descriptions, notes, names), in Chinese;
- ``model``: settings, actions and their outcomes, counters, the schedule (pure data);
- ``reporters``: who reports what, where (pure);
- ``plan``: who does what next and when — departments, grid workers, reporters rating,
  communities whistling (pure, seeded, unit-tested);
- ``actors``: the I/O — intake's HTTP API, the dispatch queues, ``gridflow.responses``.
"""
