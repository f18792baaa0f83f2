"""The one round loop for MIST and FL, the client steps, and the FL recording."""
