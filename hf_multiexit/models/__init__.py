"""Model families of hf-multiexit (flat folders that travel to the Hub)."""
