"""What a visitor can ask for, as functions of picklable values: handlers, state, GPU functions, photos, models."""
