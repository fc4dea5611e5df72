"""The key broker's client, its encryption contexts and its envelope (AWS Encryption SDK message) format."""
