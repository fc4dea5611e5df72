"""AWS Lambda entry points over the services' domain code: token-vault (API Gateway HTTP API, direct
invocation, S3 batch files) and fhe-inference (synchronous scoring). See docs/serverless.md."""
