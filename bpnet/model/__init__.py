"""The BodyPoseNet network, its loss and its optimizer."""
