"""catalogue and scan records

Revision ID: 0001
Revises:
Create Date: 2026-11-28 13:43:44.162075
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('artists',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('name_key', sa.Text(), nullable=False),
    sa.Column('mbid', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name_key')
    )
    op.create_table('covers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('mime', sa.Text(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    op.create_table('failed_files',
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('folder', sa.Text(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('mtime', sa.Float(), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('path')
    )
    op.create_index(op.f('ix_failed_files_folder'), 'failed_files', ['folder'], unique=False)
    op.create_table('scans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('root', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('discovered', sa.Integer(), server_default='0', nullable=False),
    sa.Column('unchanged', sa.Integer(), server_default='0', nullable=False),
    sa.Column('extracted', sa.Integer(), server_default='0', nullable=False),
    sa.Column('inserted', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('removed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('albums',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('title_key', sa.Text(), nullable=False),
    sa.Column('album_artist_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.SmallInteger(), nullable=True),
    sa.Column('is_compilation', sa.Boolean(), server_default='false', nullable=False),
    sa.Column('mbid', sa.String(length=36), nullable=True),
    sa.Column('release_group_mbid', sa.String(length=36), nullable=True),
    sa.Column('disc_total', sa.SmallInteger(), nullable=True),
    sa.Column('cover_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['album_artist_id'], ['artists.id'], ),
    sa.ForeignKeyConstraint(['cover_id'], ['covers.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('album_artist_id', 'title_key', name='uq_albums_artist_title')
    )
    op.create_index(op.f('ix_albums_album_artist_id'), 'albums', ['album_artist_id'], unique=False)
    op.create_table('scan_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scan_id', 'path', 'stage', name='uq_scan_failures_scan_path_stage')
    )
    op.create_index(op.f('ix_scan_failures_scan_id'), 'scan_failures', ['scan_id'], unique=False)
    op.create_table('scan_folders',
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('folder', sa.Text(), nullable=False),
    sa.Column('listed', sa.Boolean(), server_default='true', nullable=False),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scan_id', 'folder')
    )
    op.create_table('scan_units',
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('deliveries', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('current_path', sa.Text(), nullable=True),
    sa.Column('poison_paths', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('discovered', sa.Integer(), server_default='0', nullable=False),
    sa.Column('unchanged', sa.Integer(), server_default='0', nullable=False),
    sa.Column('extracted', sa.Integer(), server_default='0', nullable=False),
    sa.Column('inserted', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('removed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scan_id', 'key')
    )
    op.create_index('ix_scan_units_pending', 'scan_units', ['scan_id'], unique=False,
                    postgresql_where="state = 'pending'")
    op.create_table('tracks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('path_bytes', sa.LargeBinary(), nullable=True),
    sa.Column('folder', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('artist_id', sa.Integer(), nullable=True),
    sa.Column('album_id', sa.Integer(), nullable=True),
    sa.Column('track_number', sa.SmallInteger(), nullable=True),
    sa.Column('track_total', sa.SmallInteger(), nullable=True),
    sa.Column('disc_number', sa.SmallInteger(), nullable=True),
    sa.Column('disc_total', sa.SmallInteger(), nullable=True),
    sa.Column('date', sa.Text(), nullable=True),
    sa.Column('year', sa.SmallInteger(), nullable=True),
    sa.Column('genre', sa.Text(), nullable=True),
    sa.Column('genres', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('composers', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('duration_seconds', sa.Float(), nullable=True),
    sa.Column('bitrate', sa.Integer(), nullable=True),
    sa.Column('sample_rate', sa.Integer(), nullable=True),
    sa.Column('channels', sa.SmallInteger(), nullable=True),
    sa.Column('bits_per_sample', sa.SmallInteger(), nullable=True),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('codec', sa.String(length=16), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('mtime', sa.Float(), nullable=False),
    sa.Column('cover_id', sa.Integer(), nullable=True),
    sa.Column('folder_cover_id', sa.Integer(), nullable=True),
    sa.Column('mbid', sa.String(length=36), nullable=True),
    sa.Column('mb_release_track_id', sa.String(length=36), nullable=True),
    sa.Column('replaygain_track_gain', sa.Float(), nullable=True),
    sa.Column('replaygain_track_peak', sa.Float(), nullable=True),
    sa.Column('replaygain_album_gain', sa.Float(), nullable=True),
    sa.Column('replaygain_album_peak', sa.Float(), nullable=True),
    sa.Column('tags', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('warnings', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('search_vector', postgresql.TSVECTOR(), nullable=True),
    sa.Column('scan_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['album_id'], ['albums.id'], ),
    sa.ForeignKeyConstraint(['artist_id'], ['artists.id'], ),
    sa.ForeignKeyConstraint(['cover_id'], ['covers.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['folder_cover_id'], ['covers.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('path')
    )
    op.create_index(op.f('ix_tracks_album_id'), 'tracks', ['album_id'], unique=False)
    op.create_index(op.f('ix_tracks_artist_id'), 'tracks', ['artist_id'], unique=False)
    op.create_index(op.f('ix_tracks_cover_id'), 'tracks', ['cover_id'], unique=False)
    op.create_index(op.f('ix_tracks_folder'), 'tracks', ['folder'], unique=False)
    op.create_index(op.f('ix_tracks_folder_cover_id'), 'tracks', ['folder_cover_id'], unique=False)
    op.create_index('ix_tracks_search_vector', 'tracks', ['search_vector'], unique=False, postgresql_using='gin')
    op.create_table('track_artists',
    sa.Column('track_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.SmallInteger(), nullable=False),
    sa.Column('artist_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['artist_id'], ['artists.id'], ),
    sa.ForeignKeyConstraint(['track_id'], ['tracks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('track_id', 'position')
    )
    op.create_index(op.f('ix_track_artists_artist_id'), 'track_artists', ['artist_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_track_artists_artist_id'), table_name='track_artists')
    op.drop_table('track_artists')
    op.drop_index('ix_tracks_search_vector', table_name='tracks', postgresql_using='gin')
    op.drop_index(op.f('ix_tracks_folder_cover_id'), table_name='tracks')
    op.drop_index(op.f('ix_tracks_folder'), table_name='tracks')
    op.drop_index(op.f('ix_tracks_cover_id'), table_name='tracks')
    op.drop_index(op.f('ix_tracks_artist_id'), table_name='tracks')
    op.drop_index(op.f('ix_tracks_album_id'), table_name='tracks')
    op.drop_table('tracks')
    op.drop_index('ix_scan_units_pending', table_name='scan_units', postgresql_where="state = 'pending'")
    op.drop_table('scan_units')
    op.drop_table('scan_folders')
    op.drop_index(op.f('ix_scan_failures_scan_id'), table_name='scan_failures')
    op.drop_table('scan_failures')
    op.drop_index(op.f('ix_albums_album_artist_id'), table_name='albums')
    op.drop_table('albums')
    op.drop_table('scans')
    op.drop_index(op.f('ix_failed_files_folder'), table_name='failed_files')
    op.drop_table('failed_files')
    op.drop_table('covers')
    op.drop_table('artists')
