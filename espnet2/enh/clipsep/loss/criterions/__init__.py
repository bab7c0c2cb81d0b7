"""Loss criteria (``criterion_choices``)."""
