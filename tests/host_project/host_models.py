"""The host application's own tables."""

from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()

widgets = Table(
    "widgets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False),
)
