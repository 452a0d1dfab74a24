"""Configuration: what the user asked for, validated and resolved in one place."""
