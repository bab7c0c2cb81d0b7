"""Loss wrappers (``loss_wrapper_choices``)."""
