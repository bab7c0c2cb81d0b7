"""The frozen CLIP model: the query encoder, fitting a stand-in, which CLIP belongs to a model, image queries."""
