"""What natsrouter serves to operators over HTTP; sits above the link and the service."""
