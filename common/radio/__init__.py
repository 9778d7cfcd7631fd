"""Radio front ends behind the physical layer; hardware libraries are imported lazily."""
