"""Extensions live at module level and never store the app."""

from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, Table
from sqlalchemy.orm import DeclarativeBase

# Explicit constraint names so Alembic migrations are stable on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)

    if TYPE_CHECKING:
        # Every model names its table, so ``__table__`` is a ``Table`` (SQLAlchemy types it as ``FromClause``).
        __table__: ClassVar[Table]


def json_dumps(value: Any) -> str:
    """JSON columns through orjson (the engine's serializer, and the sync's bulk writes).

    Raw records, list fields and findings are most of a sync's encoding time.
    """
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


db = SQLAlchemy(model_class=Base)
migrate = Migrate()

# Models subclass ``Model``. At runtime it is ``db.Model`` (Flask-SQLAlchemy's subclass of ``Base``,
# adding ``query``, bind keys and ``__repr__``); mypy cannot use an instance attribute as a base
# class (python/mypy#8603), so type checking sees the declarative ``Base`` it is built from.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
