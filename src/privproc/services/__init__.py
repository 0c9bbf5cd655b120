"""The parties' network services: thin ASGI shells over the sans-IO cores."""
