"""SQLAlchemy dialect (`segdb://`) and Apache Superset engine spec for segdb's Flight SQL server."""

from segdb_sqlalchemy.dialect import SegdbDialect, arrow_to_sqla, arrow_type_name

__version__ = "0.1.0"
__all__ = ["SegdbDialect", "arrow_to_sqla", "arrow_type_name", "__version__"]
